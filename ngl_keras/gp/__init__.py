"""The genetic-programming loss search: a generic tree GP engine (`engine`), the search
loop as a resumable state machine (`evolution`), screening and fitness of loss candidates,
and the keras-tuner oracle that spreads evaluations over workers."""
