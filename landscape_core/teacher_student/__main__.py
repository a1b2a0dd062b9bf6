"""``python -m landscape_core.teacher_student``: the command line of :mod:`.cli`."""

from landscape_core.teacher_student.cli import main

raise SystemExit(main())
