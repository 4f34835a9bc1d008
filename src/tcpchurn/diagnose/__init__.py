"""tcpchurn.diagnose."""
