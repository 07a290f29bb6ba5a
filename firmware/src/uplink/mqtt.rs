//! MQTT uplink (to do).
