"""``tcpchurn report RUN_DIR`` and ``tcpchurn compare RUN_DIR RUN_DIR``: thin shells.

Options -> library call -> one line (or a table) on the terminal. A bad RUN_DIR raises
:class:`~tcpchurn.errors.BadValue` in the library, which ``cli.main`` prints as one line
with exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="HTML file to write [default: RUN_DIR/report.html].")
@click.option("--max-points", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Points per plotted series (min/max-preserving down-sampling).")
def report(run_dir: Path, out: Path | None, max_points: int) -> None:
    """Render a run directory as one self-contained HTML file, with its plots as PNGs."""
    from tcpchurn.report.html import write_report

    path = write_report(run_dir, out, max_points=max_points)
    click.echo(f"report: {path}  (plots: {path.with_name(path.stem + '-plots')}/)")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the comparison as one HTML file here.")
@click.option("--max-points", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Points per plotted series in the HTML.")
def compare(run_dirs: tuple[Path, ...], out: Path | None, max_points: int) -> None:
    """Compare runs side by side (e.g. a lab run before and after --fix)."""
    from rich.console import Console

    from tcpchurn.report.compare import load, text_table, write_compare

    if len(run_dirs) < 2:
        raise click.BadParameter(
            f"got {len(run_dirs)} run directory, need two: tcpchurn compare BEFORE AFTER",
            param_hint="RUN_DIR")
    runs = load(run_dirs)
    Console().print(text_table(runs))
    if out is not None:
        path = write_compare(runs, out, max_points=max_points)
        click.echo(f"compare: {path}")
