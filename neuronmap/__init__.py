"""neuronmap: find the modules inside neural networks, with Neo4j as the store.

The stages live in their own packages: ``neuronmap.loaders`` (model → neurons and edges),
``neuronmap.cypher`` (every Cypher statement, run by name) and ``neuronmap.service`` (pull, cluster,
statistics, write-back, CLI).
"""

__version__ = "0.1.0"
