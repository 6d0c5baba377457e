//! Stage `report`: what a judged run leaves behind and prints: the run dir
//! with results.yaml and junit.xml, the table, and the snapshot comparison.

pub mod junit;
pub mod print;
pub mod results;
pub mod snapshot;
