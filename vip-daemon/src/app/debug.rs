//! `vipd debug packets`: the XDP program logs each VIP packet's fate while a CLI keeps asking
//! for it. The flag lives in SETTINGS (written from the same image as everything else), and
//! goes off by itself when no CLI renewed it for [`RENEW_WITHIN`], so a CLI killed without
//! saying goodbye does not leave every packet logged.
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use vip_common::maps::SETTINGS_F_PEERS;

use super::Daemon;
use crate::core::image::{self, PacketDebug};

/// How long one request keeps logging on; the CLI renews every second.
pub const RENEW_WITHIN: Duration = Duration::from_secs(5);

impl Daemon {
    /// Turns packet logging on (or renews it) with these filters, or off; returns the id of
    /// the attached XDP program, whose `AYA_LOGS` ring buffer carries the records.
    pub(super) fn debug_packets(
        &mut self,
        on: bool,
        vip: Option<IpAddr>,
        src: Option<IpAddr>,
    ) -> Result<u32, String> {
        if let Some(v) = vip.filter(|v| !self.config.vips.iter().any(|c| c.address == *v)) {
            return Err(format!("no VIP has the address {v}"));
        }
        let program_id = (self.maps.dp_mut().program())
            .and_then(|p| Ok(p.info()?.id()))
            .map_err(|e| format!("the XDP program: {e}"))?;
        let was = self.packet_debug.map(|(d, _)| d);
        let want = PacketDebug { vip, src };
        self.packet_debug = on.then(|| (want, Instant::now() + RENEW_WITHIN));
        if was != self.packet_debug.map(|(d, _)| d) {
            self.write_packet_debug()?;
            match on {
                true => tracing::info!(
                    ?vip,
                    ?src,
                    "debug packets: the XDP program logs VIP packets"
                ),
                false => tracing::info!("debug packets: off"),
            }
        }
        Ok(program_id)
    }

    /// Turns packet logging off when no CLI renewed it in time.
    pub(super) fn packet_debug_tick(&mut self) {
        if self
            .packet_debug
            .is_some_and(|(_, until)| Instant::now() >= until)
        {
            self.packet_debug = None;
            tracing::warn!("debug packets: not renewed for {RENEW_WITHIN:?}, off");
            if let Err(e) = self.write_packet_debug() {
                tracing::error!(error = %e, "SETTINGS write failed");
            }
        }
    }

    fn write_packet_debug(&mut self) -> Result<(), String> {
        let peers = self.maps.image().settings.flags & SETTINGS_F_PEERS != 0;
        let debug = self.packet_debug.map(|(d, _)| d);
        let settings = image::settings(&self.config, self.layout_id, peers, debug);
        self.maps.settings(settings).map_err(|e| e.to_string())
    }
}
