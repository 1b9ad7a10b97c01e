# Ablation: the pruned CIFAR-10 student finetuned with DSM only (Diff-Pruning's recipe;
# published FID 5.29). Everything else as 2ndm_cifar10.py, including its student (pruning
# threshold 0.04, shared by every arm; Diff-Pruning's own 5.29 student used --thr 0.05).
_base_ = ['./2ndm_cifar10.py']

model = dict(losses=dict(kd=None, jacobian=None))
