from .teacher_fidelity import TeacherFidelity

__all__ = ['TeacherFidelity']
