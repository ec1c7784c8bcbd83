"""Allow ``python -m mvpa_flows``."""

from mvpa_flows.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
