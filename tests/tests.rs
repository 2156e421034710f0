mod search;
mod analytics;
mod common;
mod core;
mod crash;
mod replay;
mod serve;
