"""Using a finished run outside MMEngine: load it, sample it, export its student."""
from .export import export_student, load_student
from .inference import index_noise, init_distiller, sample_to_folder

__all__ = ['init_distiller', 'sample_to_folder', 'index_noise', 'export_student',
           'load_student']
