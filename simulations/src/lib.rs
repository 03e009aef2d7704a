//! oda-simulations.
