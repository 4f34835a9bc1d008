"""tcpchurn: an exact rate of new TCP connections, and every kernel table it fills."""

__version__ = "0.1.0"
