from .clip_score import CLIPScore
from .teacher_fidelity import TeacherFidelity

__all__ = ['CLIPScore', 'TeacherFidelity']
