"""``python -m app.cli`` runs the ``calogan`` command line."""

from app.cli.main import main

main()
