"""From an architecture file to a network you can ship: its weights (inherited from a supernet or
retrained, :mod:`.weights`) and the stand-alone files (:mod:`.formats`: ONNX, TorchScript, a
state dict), each checked against the network it came from."""
from .formats import FORMATS, export_network, load_state_dict_export
from .weights import ExportSource, network_for_export

__all__ = ["ExportSource", "FORMATS", "export_network", "load_state_dict_export", "network_for_export"]
