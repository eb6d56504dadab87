from edge_gesture_export.cli import main

raise SystemExit(main())
