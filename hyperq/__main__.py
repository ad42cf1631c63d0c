"""`python -m hyperq` runs the `hq` command line."""

from hyperq.cli.main import main

main()
