//! The data path: transparent TCP and UDP proxying with a verdict per connection or flow.

pub mod relay;
