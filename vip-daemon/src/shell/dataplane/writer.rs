//! The one writer of vipd's maps. Every map value the daemon changes goes through a
//! [`MapWriter`], which writes the kernel and the host model (`core::model::ModelState`)
//! together: the model is exactly the image the kernel holds, which `vipd trace` replays and
//! the kernel == model tests compare. Values are computed elsewhere, purely (`core::plan`,
//! `core::image`); the writer skips a write whose value is already there. The order of a
//! change (new backends, tables, VIPs, removals) is the caller's: see `app/startup.rs`
//! `apply_layout`.
use vip_common::maps::{
    peer_filter, vip_filter, Backend, EncapSourceKey, Iface, Lease, LeaseKey, PeerFilter, Settings,
    VipFilter, VipInfo, VipKey, MAP_PEER_FILTER, MAP_VIP_FILTER,
};

use super::{Dataplane, DataplaneError, TablePublisher, TableRegion};
use crate::core::model::ModelState;

pub struct MapWriter {
    dp: Dataplane,
    tables: TablePublisher,
    image: ModelState,
    /// What `VIP_FILTER` holds (None until first written: a previous vipd's contents).
    vip_filter: Option<VipFilter>,
    /// What `PEER_FILTER` holds, likewise.
    peer_filter: Option<PeerFilter>,
}

impl MapWriter {
    /// `image`: what the maps hold now (tables read back from adopted maps, the rest as it
    /// will be rewritten by the first `apply_layout`).
    pub fn new(dp: Dataplane, tables: TablePublisher, image: ModelState) -> Self {
        Self {
            dp,
            tables,
            image,
            vip_filter: None,
            peer_filter: None,
        }
    }

    /// What the maps hold, as the host model.
    pub fn image(&self) -> &ModelState {
        &self.image
    }

    /// Reads (counters, flow stats) and program attachment; never map values.
    pub fn dp(&self) -> &Dataplane {
        &self.dp
    }

    pub fn dp_mut(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    pub fn settings(&mut self, settings: Settings) -> Result<(), DataplaneError> {
        self.dp.set_settings(&settings)?;
        self.image.settings = settings;
        Ok(())
    }

    /// Makes `ENCAP_SOURCES` hold exactly `wanted` (also dropping what a previous vipd left).
    pub fn encap_sources(&mut self, wanted: &[EncapSourceKey]) -> Result<(), DataplaneError> {
        self.dp.set_encap_sources(wanted)?;
        self.image.encap_sources = wanted.iter().copied().collect();
        Ok(())
    }

    /// Writes backend `index`'s entry when it differs from what the maps hold; true if written.
    pub fn backend(&mut self, index: u32, entry: Backend) -> Result<bool, DataplaneError> {
        if self.image.backends[index as usize] == entry {
            return Ok(false);
        }
        self.dp.set_backend(index, &entry)?;
        self.image.backends[index as usize] = entry;
        Ok(true)
    }

    /// Makes `VIPS` hold exactly `wanted`: every entry (re)written, then the others removed
    /// (also those a previous vipd left, which the image does not know).
    /// `VIP_FILTER` covers the old and the new addresses while the entries change, then the
    /// new ones only: a VIP's address is never filtered out while its entry is there.
    pub fn vips(&mut self, wanted: &[(VipKey, VipInfo)]) -> Result<(), DataplaneError> {
        let both = self.image.vips.keys().chain(wanted.iter().map(|(k, _)| k));
        self.write_vip_filter(vip_filter(both.map(|k| &k.addr)))?;
        self.image.vips.clear();
        for (key, info) in wanted {
            self.dp.set_vip(key, info)?;
            self.image.vips.insert(*key, *info);
        }
        for (key, _) in self.dp.vips()? {
            if !self.image.vips.contains_key(&key) {
                self.dp.remove_vip(&key)?;
            }
        }
        self.write_vip_filter(vip_filter(self.image.vips.keys().map(|k| &k.addr)))
    }

    /// Makes `VIP_FILTER` hold `words`, writing only the words that changed.
    fn write_vip_filter(&mut self, words: VipFilter) -> Result<(), DataplaneError> {
        if self.vip_filter != Some(words) {
            let old = self.vip_filter.as_ref().map(|w| &w[..]);
            self.dp.set_filter(MAP_VIP_FILTER, &words, old)?;
            self.vip_filter = Some(words);
        }
        Ok(())
    }

    /// (Re)writes one `VIPS` entry.
    pub fn vip(&mut self, key: VipKey, info: VipInfo) -> Result<(), DataplaneError> {
        let with_key = self.image.vips.keys().chain([&key]);
        self.write_vip_filter(vip_filter(with_key.map(|k| &k.addr)))?;
        self.dp.set_vip(&key, &info)?;
        self.image.vips.insert(key, info);
        Ok(())
    }

    /// Publishes `table` into `region` (`TablePublisher::publish`); the generation now live.
    pub fn table(&mut self, region: &TableRegion, table: &[u32]) -> Result<u32, DataplaneError> {
        let (gen, _) = self.tables.publish(region, table)?;
        self.record_table(region, gen, table);
        Ok(gen)
    }

    /// Publishes the live table of `region` patched by `diff`; the generation now live and
    /// when it went live. With the token of a [`MapWriter::prepare_table`] of this diff, that
    /// only flips. The image's table follows with [`MapWriter::patch_image_some`]: until
    /// then it is the table before (the caller keeps the patch and settles it before any
    /// read of the image).
    pub fn patch_table(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
        prepared: Option<u64>,
    ) -> Result<(u32, std::time::Instant), DataplaneError> {
        let flipped = prepared.and_then(|token| self.tables.publish_prepared(region, token));
        let gen = match flipped {
            Some(gen) => gen,
            None => self.tables.publish_patched(region, diff)?.0,
        };
        let live_at = std::time::Instant::now();
        self.image.active[region.vip_index as usize] = region.base;
        Ok((gen, live_at))
    }

    /// Applies up to `max` more slots of a patch [`MapWriter::patch_table`] made live to
    /// the image's table of `region`, from `at`; whether the patch is all in.
    /// `on_change(old, new)` sees each changed slot's backend indices.
    pub fn patch_image_some(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
        at: &mut crate::core::precompute::DiffCursor,
        max: usize,
        mut on_change: impl FnMut(u32, u32),
    ) -> bool {
        let base = region.base as usize;
        let image = &mut self.image.slots[base..base + region.size as usize];
        diff.apply_some(at, max, |slot, new| {
            on_change(image[slot], new);
            image[slot] = new;
        })
    }

    /// Writes the live table of `region` patched by `diff` into its inactive generation,
    /// not live yet, a piece of about `max` slots per call (`TablePublisher::prepare`).
    pub fn prepare_table(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
        token: u64,
        max: usize,
    ) -> Result<super::Prepare, DataplaneError> {
        self.tables.prepare(region, diff, token, max)
    }

    /// Records in the image a table the maps already hold (adopted from a previous vipd).
    /// The image keeps each region's live table at its first generation's place, whichever
    /// generation the kernel has live: lookups see the same table, and the image's other
    /// generation is never touched (with 50 VIPs of 65537 slots, 12.8 MiB never resident).
    pub fn record_table(&mut self, region: &TableRegion, _gen: u32, table: &[u32]) {
        let base = region.base;
        self.image.slots[base as usize..(base + region.size) as usize].copy_from_slice(table);
        self.image.active[region.vip_index as usize] = base;
    }

    /// The table the image has live for `region` (meaningful once one was recorded).
    pub fn image_table(&self, region: &TableRegion) -> &[u32] {
        let base = self.image.active[region.vip_index as usize] as usize;
        &self.image.slots[base..base + region.size as usize]
    }

    /// Whether the kernel's live table of `region` is the image's (compared in place).
    pub fn live_matches_image(&mut self, region: &TableRegion) -> bool {
        let base = self.image.active[region.vip_index as usize] as usize;
        let want = &self.image.slots[base..base + region.size as usize];
        self.tables.live_equals(region, want)
    }

    /// The table the kernel has live for `region` (to check it against the image).
    pub fn live_table(&mut self, region: &TableRegion) -> Option<Vec<u32>> {
        self.tables.live_table(region)
    }

    pub fn lease(&mut self, key: LeaseKey, lease: Lease) -> Result<(), DataplaneError> {
        self.dp.set_lease(&key, &lease)?;
        self.image.leases.insert(key, lease);
        Ok(())
    }

    pub fn remove_lease(&mut self, key: LeaseKey) -> Result<(), DataplaneError> {
        self.dp.remove_lease(&key)?;
        self.image.leases.remove(&key);
        Ok(())
    }

    /// Lists a peer node's MAC (second chance: segments from it are not bounced back).
    pub fn peer(&mut self, mac: [u8; 6], node_id: u32) -> Result<(), DataplaneError> {
        let words = peer_filter(self.image.peers.iter().chain([&mac]));
        if self.peer_filter != Some(words) {
            let old = self.peer_filter.as_ref().map(|w| &w[..]);
            self.dp.set_filter(MAP_PEER_FILTER, &words, old)?;
            self.peer_filter = Some(words);
        }
        self.dp.set_peer(mac, node_id)?;
        self.image.peers.insert(mac);
        Ok(())
    }

    /// Lists an attached interface's MAC and MTU (`IFACES`). Per interface, so the image
    /// keeps none: a traced frame's interface is the trace's input.
    pub fn iface(&mut self, ifindex: u32, mac: [u8; 6], mtu: u16) -> Result<(), DataplaneError> {
        self.dp.set_iface(ifindex, mac, mtu)
    }

    /// Lists interface `ifindex` as egress `port` (`EGRESS`, `EGRESS_DEVS`).
    pub fn egress(&mut self, port: u32, ifindex: u32, iface: Iface) -> Result<(), DataplaneError> {
        self.dp.set_egress(port, ifindex, iface)
    }
}
