//! End-to-end tests: real `pylon` processes on free loopback ports.

mod admin;
mod cache;
mod cli;
mod cluster;
mod console;
mod declarative;
mod deploy;
mod front_door;
mod gateway;
mod import;
mod limits;
mod linearizable;
mod portal;
mod request_phase;
mod support;
mod telemetry;
mod trust;
mod websocket;
