"""Can this machine's GPUs run the installed MXNet? The CUDA libraries its build links (and loading the pip
copies before mxnet), the kernels its libmxnet.so holds, the driver and GPUs NVML reports, and the verdict
tools/doctor.py prints and `--gpus` applies. Imports no mxnet until a GPU is actually tried.
"""
