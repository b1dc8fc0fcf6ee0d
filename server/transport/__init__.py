"""How the orchestrator talks to a box's shell, whatever carries it: the results and calls every
transport shares (``types``), the control-channel client over any stdio stream (``channel``), the
reconnect-once policy (``retry``), and a transport over a local process (``process``: a subprocess
``sh``, ``docker exec -i``, ``kubectl exec -i``). SSH is ``server.ssh``, built on the same parts."""
