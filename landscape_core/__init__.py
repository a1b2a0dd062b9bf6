"""landscape_core: the science of landscape sweeps, in pure functional PyTorch.

No Ray, MLflow, Hydra or pyarrow here: functions take plain values and tensors and
return plain records, so everything is usable from a notebook::

    from landscape_core.teacher_student import run_teacher_student
    records = run_teacher_student(k=8, n=8, seeds=range(100))
"""

from landscape_core.errors import OptionError

__all__ = ["teacher_student", "seeding", "OptionError"]
