"""Full-state dumps to safetensors: the background dump writer, optimizer flattening, import of .pt files."""
