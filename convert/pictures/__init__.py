"""Pictures of graphs: a checkpoint's object graph as Graphviz DOT (`dot.py`), drawn to SVG
or PNG by Graphviz's own `dot` program (`render.py`)."""
