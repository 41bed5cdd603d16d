from toren_action.cli import main

raise SystemExit(main())
