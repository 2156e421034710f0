mod analytics;
mod common;
mod core;
mod crash;
mod replay;
mod search;
mod serve;
