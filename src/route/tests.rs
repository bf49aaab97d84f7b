//! Native tests of the route module.
