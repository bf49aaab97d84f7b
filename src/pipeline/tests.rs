//! Native tests of the pipeline module.
