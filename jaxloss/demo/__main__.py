"""``python -m jaxloss.demo``: see :mod:`jaxloss.demo`."""

from jaxloss.demo._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
