"""tcpchurn.report."""
