"""``python -m caffeport``: the same CLI as the ``caffeport`` console script."""

from caffeport.cli import main

raise SystemExit(main())
