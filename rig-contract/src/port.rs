//! The KTAP channel's virtio-serial port, and what the guest runner prints on
//! the console when it cannot find that port (the host then stops at once
//! instead of waiting for KTAP that will never come).

/// The virtio-serial port name the host gives the KTAP channel.
pub const NAME: &str = "ktap";

/// The start of the runner's console message when the port is missing; the
/// rest names the directory it searched.
fn missing_prefix() -> String {
    format!("bpf-selftests: no virtio port named {NAME:?}")
}

/// The runner's console message when no port named [`NAME`] showed up under
/// `class_dir`.
pub fn missing_message(class_dir: &str) -> String {
    format!(
        "{} under {class_dir}; writing KTAP to stdout",
        missing_prefix()
    )
}

/// Whether the console text holds the runner's missing-port message.
///
/// Accepted format: `bpf-selftests: no virtio port named "ktap"` anywhere in
/// the text (the kernel may prefix the console line).
pub fn console_says_missing(console: &str) -> bool {
    console.contains(&missing_prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = missing_message("/sys/class/virtio-ports");
        assert_eq!(
            m,
            "bpf-selftests: no virtio port named \"ktap\" under /sys/class/virtio-ports; \
             writing KTAP to stdout"
        );
        assert!(console_says_missing(&format!("[    3.1] x\n{m}\n")));
        assert!(!console_says_missing(
            "bpf-selftests: KTAP on /dev/vport0p1"
        ));
    }
}
