//! The radio energy model. (Being written; see the heartbeat issue.)
