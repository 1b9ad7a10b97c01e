from .metrics import CLIPScore, TeacherFidelity

__all__ = ['CLIPScore', 'TeacherFidelity']
