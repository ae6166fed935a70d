//! `cartctl devices`: cameras and sound devices as a configuration names them.

pub(crate) fn run() {
    let scan = telecart_devices::scan_cameras();
    println!("Cameras (video.device):");
    if scan.cameras.is_empty() {
        println!("  none found");
    }
    for camera in &scan.cameras {
        for line in camera.to_string().lines() {
            println!("  {line}");
        }
    }
    for problem in &scan.problems {
        println!("  ! {problem}");
    }
    let pcms = telecart_devices::list_pcms();
    println!("Sound devices (audio.capture_device / audio.playback_device):");
    if pcms.is_empty() {
        println!("  none found");
    }
    for pcm in pcms {
        let dirs = match (pcm.capture, pcm.playback) {
            (true, true) => "capture+playback",
            (true, false) => "capture",
            _ => "playback",
        };
        println!("  {:<32} {dirs:<16} {}", pcm.name, pcm.description);
    }
}
