"""`python -m tcpchurn`."""

from tcpchurn.cli import main

if __name__ == "__main__":
    main()
