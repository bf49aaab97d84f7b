//! Native tests of the config module.
