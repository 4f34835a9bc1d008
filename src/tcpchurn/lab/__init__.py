"""tcpchurn.lab."""
