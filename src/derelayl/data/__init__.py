"""Data: the embedded and torchvision datasets with their fixed splits (``datasets``, edge), the
non-IID partitioners and participants' data (``partition``, ``participants``: core), and the
splits and partitions materialised by the DVC stages (``prepared``, edge)."""
