from .metrics import TeacherFidelity

__all__ = ['TeacherFidelity']
