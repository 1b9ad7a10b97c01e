# Dense DiT teacher of the digits study's depth-pruning variant: plain DDPM training (DSM
# only) of the pixel DiT of _base_/dit_digits16.py on the digits at 16x16, as
# teacher_digits16.py trains its U-Net (same data, schedule, EMA and run length).
#
#   python tools/train.py configs/digits/teacher_digits16_dit.py \
#       --work-dir work_dirs/digits/teacher_dit
#
# The run's EMA is the teacher of 2ndm_digits16_dit_d4.py.
_base_ = ['./teacher_digits16.py', './_base_/dit_digits16.py']

model = dict(student={{_base_.dit}})
