"""safetensors files and sharded sets, read and written natively."""
