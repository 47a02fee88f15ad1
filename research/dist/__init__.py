"""Training on several machines with MXNet's parameter-server kvstore (tools/launch_dist.py): the ps-lite
nodes started, watched and ended (nodes.py). Imports no mxnet: with DMLC_ROLE set, importing it turns a
process into a ps-lite node."""
