from quantloop.cli import main

raise SystemExit(main())
