"""tcpchurn.lab: each failure mode reproduced in network namespaces against real servers.

Modules, bottom up:

* ``journal`` -- every host change written (fsync) before it is made; undo in reverse.
* ``guard`` -- the one-lab-at-a-time lock and the signal handlers that restore the host.
* ``topology`` -- client and server namespaces joined by a veth pair (198.18.0.0/15).
* ``faults`` -- sysctls per namespace and on the host, nftables tables.
* ``servers`` -- apache2, nginx and the built-in server from generated configs.
* ``scenarios`` -- the scenarios as data; ``fixes`` -- the diagnosis' fix as lab settings.
* ``client`` -- ``tcpchurn run`` in the client namespace; ``sampler`` and ``tuples`` --
  the lab's own view of the server namespace (stall time, the 2009 view, 4-tuples).
* ``runner`` -- one pass (build, load, restore) and a scenario (before, fix, after);
  ``results`` -- what a pass produced.

See docs/lab.md.
"""
