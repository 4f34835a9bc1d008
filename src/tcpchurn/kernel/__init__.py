"""tcpchurn.kernel."""
