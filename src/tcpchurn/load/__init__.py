"""tcpchurn.load."""
