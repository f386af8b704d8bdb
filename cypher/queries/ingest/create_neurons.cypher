// Create a run of consecutive neurons of one layer: one row per run, the biases as one list (fat rows).
//
// mode: write
// param model: str    the model's name
// param rows: list    maps: layer, role, start (first unit index), ordinal (ordinal of that unit), bias (list)
// returns: created: int
UNWIND $rows AS row
UNWIND range(0, size(row.bias) - 1) AS i
CREATE (:Neuron {model: $model, layer: row.layer, index: row.start + i, ordinal: row.ordinal + i,
                 role: row.role, bias: row.bias[i]})
RETURN count(*) AS created
