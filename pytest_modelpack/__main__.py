"""``python -m pytest_modelpack`` runs the ``modelpack`` command line."""

from .cli import main

raise SystemExit(main())
