//! What the daemon changes on the node outside BPF, for the node-local mode: the interface
//! holding the served addresses, and the NOTRACK rules that keep its traffic out of
//! conntrack. Both are undone on exit.
pub mod local_iface;
pub mod notrack;
pub mod settings;
