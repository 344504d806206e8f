//! Storage buffers whose memory the subgroup matmul's operand textures alias, on lavapipe.
//!
//! shaders/matmul_sgtex.wgsl reads op(A) and op(B) as rgba32float images, 2048 texels (32 KiB) a row,
//! float i of a buffer in texel (i/4 mod 2048, i/4 / 2048). Filling such a texture by a buffer →
//! texture copy before each launch ([`crate::gpu::pipeline::TexFill`]) costs about a fifth of the
//! launch's CPU time on lavapipe (benches/RESULTS.md, 2026-11-29). Here instead the buffer's memory
//! is allocated by us, and a linear-tiled image with exactly that layout is bound to the same memory:
//! the kernel reads the buffer's current contents through it, and nothing is copied.
//!
//! Why only lavapipe (driver "llvmpipe"): wgpu tracks the buffer and the image as two resources and
//! places no barrier between a dispatch writing one and a dispatch reading the other. On llvmpipe
//! every dispatch has finished, all its writes in memory, before the next one starts
//! (`llvmpipe_launch_grid` waits for its threads), and image layouts are no-ops; on other drivers the
//! aliasing would need barriers wgpu cannot record for us. Elsewhere [`Aliasing::new`] returns None
//! and the copies stay.
//!
//! Images cover the buffer in windows of 2048 rows (64 MiB, the texture limit) starting every 1024
//! rows (32 MiB), so a region of at most 32 MiB lies whole in one window. They are made when a launch
//! first asks for one, and live as long as the buffer: once wgpu has destroyed it, the next buffer
//! made or texture asked for drops its entry here, then its images and memory go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ash::vk;
use wgpu::hal::api::Vulkan;

use super::pipeline::{OperandTexture, TEX_WIDTH};

/// Bytes a texture row holds (2048 rgba32float texels).
const ROW_BYTES: u64 = TEX_WIDTH as u64 * 16;
/// Rows an image holds (a window) and rows between windows' starts.
const WINDOW_ROWS: u64 = 2048;
const STEP_ROWS: u64 = 1024;
/// The largest region a window is sure to hold whole.
pub const MAX_REGION: u64 = STEP_ROWS * ROW_BYTES;

/// Memory a buffer and its images share, and the buffer's handle: freed when the buffer and every
/// image over it are gone.
struct Memory {
    device: ash::Device,
    memory: vk::DeviceMemory,
    buffer: vk::Buffer,
    /// Bytes allocated: the buffer's texture rows, and whatever more its images need (lavapipe
    /// pads an image's height to a multiple of 16 rows).
    bytes: u64,
    /// Texture rows the buffer spans (its bytes / 32 KiB, rounded up): what the windows cover.
    rows: u64,
    /// The device's total of such bytes ([`Aliasing::bytes`]).
    total: Arc<AtomicU64>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: wgpu has destroyed its buffer and every image over this memory (their drop callbacks
        // held this Arc), so nothing uses the handles.
        unsafe {
            self.device.destroy_buffer(self.buffer, None);
            self.device.free_memory(self.memory, None);
        }
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

struct Entry {
    memory: Arc<Memory>,
    /// Windows made so far, by their first row / STEP_ROWS.
    windows: HashMap<u64, OperandTexture>,
}

/// The aliased buffers of one device, by their Vulkan handle.
pub struct Aliasing {
    memory_type: u32,
    buffers: Mutex<HashMap<u64, Entry>>,
    /// Handles of buffers wgpu has destroyed (their drop callbacks), pruned before each lookup.
    dead: Arc<Mutex<Vec<u64>>>,
    /// Bytes of memory allocated here and not yet freed (wgpu's allocator report does not see them).
    total: Arc<AtomicU64>,
}

fn image_info(rows: u32) -> vk::ImageCreateInfo<'static> {
    vk::ImageCreateInfo::default()
        .image_type(vk::ImageType::TYPE_2D)
        .format(vk::Format::R32G32B32A32_SFLOAT)
        .extent(vk::Extent3D { width: TEX_WIDTH, height: rows, depth: 1 })
        .mip_levels(1)
        .array_layers(1)
        .samples(vk::SampleCountFlags::TYPE_1)
        .tiling(vk::ImageTiling::LINEAR)
        .usage(vk::ImageUsageFlags::STORAGE)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .initial_layout(vk::ImageLayout::UNDEFINED)
}

fn buffer_info(bytes: u64) -> vk::BufferCreateInfo<'static> {
    vk::BufferCreateInfo::default()
        .size(bytes)
        .usage(
            vk::BufferUsageFlags::STORAGE_BUFFER
                | vk::BufferUsageFlags::TRANSFER_SRC
                | vk::BufferUsageFlags::TRANSFER_DST,
        )
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
}

impl Aliasing {
    /// Aliasing for `device` where it is lavapipe on Vulkan and a linear rgba32float storage image of a
    /// whole window is laid out as the kernel reads a buffer (32 KiB rows, no padding) in host-visible
    /// memory a storage buffer may use; None otherwise.
    pub fn new(adapter: &wgpu::Adapter, device: &wgpu::Device) -> Option<Aliasing> {
        let info = adapter.get_info();
        if info.backend != wgpu::Backend::Vulkan || info.driver != "llvmpipe" {
            return None;
        }
        // SAFETY: the handles are used only within this call and destroyed before it returns.
        unsafe {
            let hal = device.as_hal::<Vulkan>()?;
            let (raw, phd) = (hal.raw_device(), hal.raw_physical_device());
            let instance = hal.shared_instance().raw_instance();
            let props = instance
                .get_physical_device_image_format_properties(
                    phd,
                    vk::Format::R32G32B32A32_SFLOAT,
                    vk::ImageType::TYPE_2D,
                    vk::ImageTiling::LINEAR,
                    vk::ImageUsageFlags::STORAGE,
                    vk::ImageCreateFlags::empty(),
                )
                .ok()?;
            if u64::from(props.max_extent.width) < u64::from(TEX_WIDTH)
                || u64::from(props.max_extent.height) < WINDOW_ROWS
            {
                return None;
            }
            let image = raw.create_image(&image_info(WINDOW_ROWS as u32), None).ok()?;
            let layout = raw.get_image_subresource_layout(
                image,
                vk::ImageSubresource { aspect_mask: vk::ImageAspectFlags::COLOR, mip_level: 0, array_layer: 0 },
            );
            let image_req = raw.get_image_memory_requirements(image);
            raw.destroy_image(image, None);
            let buffer = raw.create_buffer(&buffer_info(ROW_BYTES), None).ok()?;
            let buffer_req = raw.get_buffer_memory_requirements(buffer);
            raw.destroy_buffer(buffer, None);
            let exact = layout.offset == 0
                && layout.row_pitch == ROW_BYTES
                && image_req.size <= WINDOW_ROWS * ROW_BYTES
                && (STEP_ROWS * ROW_BYTES) % image_req.alignment.max(1) == 0;
            if !exact {
                tracing::debug!("no aliased operand textures: image layout {layout:?}, requirements {image_req:?}");
                return None;
            }
            let mem = instance.get_physical_device_memory_properties(phd);
            let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
            let bits = image_req.memory_type_bits & buffer_req.memory_type_bits;
            let memory_type = (0..mem.memory_type_count)
                .find(|&i| bits & (1 << i) != 0 && mem.memory_types[i as usize].property_flags.contains(want))?;
            Some(Aliasing { memory_type, buffers: Mutex::default(), dead: Arc::default(), total: Arc::default() })
        }
    }

    /// Bytes of the aliased buffers' memory not yet freed.
    pub fn bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn prune(&self, buffers: &mut HashMap<u64, Entry>) {
        // Taken out first: dropping an entry's textures may let wgpu destroy other resources, whose
        // drop callbacks lock `dead`.
        let dead = std::mem::take(&mut *self.dead.lock().unwrap());
        for h in dead {
            buffers.remove(&h);
        }
    }

    /// A zeroed storage buffer of `bytes` bytes (usages STORAGE, COPY_SRC, COPY_DST) whose memory
    /// operand textures may alias; None where Vulkan refuses one (the caller makes a plain buffer).
    pub fn storage(&self, device: &wgpu::Device, label: &str, bytes: u64) -> Option<wgpu::Buffer> {
        let rows = bytes.div_ceil(ROW_BYTES);
        let memory = {
            let hal = unsafe { device.as_hal::<Vulkan>()? };
            let raw = hal.raw_device();
            // SAFETY: every handle made here is destroyed on each failure path, or owned by `Memory`.
            unsafe {
                // Room for every window's image, as Vulkan sizes it (a whole one fits, `new` checked).
                let mut alloc = rows * ROW_BYTES;
                for w in (0..rows.div_ceil(STEP_ROWS)).filter(|w| rows - w * STEP_ROWS < WINDOW_ROWS) {
                    let image = raw.create_image(&image_info((rows - w * STEP_ROWS) as u32), None).ok()?;
                    let need = raw.get_image_memory_requirements(image).size;
                    raw.destroy_image(image, None);
                    alloc = alloc.max(w * STEP_ROWS * ROW_BYTES + need);
                }
                let buffer = raw.create_buffer(&buffer_info(bytes), None).ok()?;
                let info = vk::MemoryAllocateInfo::default().allocation_size(alloc).memory_type_index(self.memory_type);
                let Ok(memory) = raw.allocate_memory(&info, None) else {
                    raw.destroy_buffer(buffer, None);
                    return None;
                };
                self.total.fetch_add(alloc, Ordering::Relaxed);
                let memory =
                    Memory { device: raw.clone(), memory, buffer, bytes: alloc, rows, total: self.total.clone() };
                raw.bind_buffer_memory(buffer, memory.memory, 0).ok()?;
                // wgpu takes a buffer from outside as initialised: zero it, as wgpu's own are.
                let ptr = raw.map_memory(memory.memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()).ok()?;
                std::ptr::write_bytes(ptr.cast::<u8>(), 0, alloc as usize);
                raw.unmap_memory(memory.memory);
                Arc::new(memory)
            }
        };
        let handle = vk::Handle::as_raw(memory.buffer);
        let (dead, keep) = (self.dead.clone(), memory.clone());
        let drop_callback: wgpu::hal::DropCallback = Box::new(move || {
            dead.lock().unwrap().push(handle);
            drop(keep);
        });
        let mut buffers = self.buffers.lock().unwrap();
        self.prune(&mut buffers);
        // SAFETY: the buffer was made on this device with this size and usages, and bound to zeroed
        // memory; wgpu never destroys it (the callback releases it once wgpu is done with it).
        let buffer = unsafe {
            let hal_buffer = wgpu::hal::vulkan::Buffer::from_raw_externally_owned(memory.buffer, drop_callback);
            device.create_buffer_from_hal::<Vulkan>(
                hal_buffer,
                &wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                },
            )
        };
        buffers.insert(handle, Entry { memory, windows: HashMap::new() });
        Some(buffer)
    }

    /// The texture over `buffer`'s bytes `offset .. offset + bytes` (offset a multiple of 16) and the
    /// texel at which they start in it; None where `buffer` is not one of ours or the region passes
    /// its window.
    pub fn texture(
        &self,
        device: &wgpu::Device,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Option<(OperandTexture, u32)> {
        if offset % 16 != 0 {
            return None;
        }
        // SAFETY: the handle is only used as a key.
        let handle = unsafe { vk::Handle::as_raw(buffer.as_hal::<Vulkan>()?.raw_handle()) };
        let mut buffers = self.buffers.lock().unwrap();
        self.prune(&mut buffers);
        let entry = buffers.get_mut(&handle)?;
        let w = offset / ROW_BYTES / STEP_ROWS;
        let start = w * STEP_ROWS * ROW_BYTES;
        let rows = entry.memory.rows.saturating_sub(w * STEP_ROWS).min(WINDOW_ROWS);
        if rows == 0 || offset + bytes > start + rows * ROW_BYTES {
            return None;
        }
        let base = ((offset - start) / 16) as u32;
        if let Some(t) = entry.windows.get(&w) {
            return Some((t.clone(), base));
        }
        let texture = window(device, &entry.memory, start, rows as u32)?;
        entry.windows.insert(w, texture.clone());
        Some((texture, base))
    }
}

/// A linear image of `rows` texture rows bound to `memory` at `start`, as a wgpu texture and view.
fn window(device: &wgpu::Device, memory: &Arc<Memory>, start: u64, rows: u32) -> Option<OperandTexture> {
    let image = {
        let hal = unsafe { device.as_hal::<Vulkan>()? };
        let raw = hal.raw_device();
        // SAFETY: `Aliasing::new` checked that such an image is laid out as the kernel reads the buffer
        // and that window starts suit its alignment; its size is checked against the memory left here.
        unsafe {
            let image = raw.create_image(&image_info(rows), None).ok()?;
            if raw.get_image_memory_requirements(image).size > memory.bytes - start
                || raw.bind_image_memory(image, memory.memory, start).is_err()
            {
                raw.destroy_image(image, None);
                return None;
            }
            image
        }
    };
    let size = wgpu::Extent3d { width: TEX_WIDTH, height: rows, depth_or_array_layers: 1 };
    let (device_raw, keep) = (memory.device.clone(), memory.clone());
    let drop_callback: wgpu::hal::DropCallback = Box::new(move || {
        // SAFETY: wgpu is done with the image (this runs when it destroys its texture).
        unsafe { device_raw.destroy_image(image, None) };
        drop(keep);
    });
    // SAFETY: the image was made on this device with this size, format and usage; wgpu takes it as
    // initialised (it is: it shows the buffer) and never clears or destroys it.
    let texture = unsafe {
        let hal = device.as_hal::<Vulkan>()?;
        let hal_texture = hal.texture_from_raw(
            image,
            &wgpu::hal::TextureDescriptor {
                label: Some("matmul operand (aliased)"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::wgt::TextureUses::STORAGE_READ_ONLY,
                memory_flags: wgpu::hal::MemoryFlags::empty(),
                view_formats: Vec::new(),
            },
            Some(drop_callback),
            wgpu::hal::vulkan::TextureMemory::External,
        );
        drop(hal);
        device.create_texture_from_hal::<Vulkan>(
            hal_texture,
            &wgpu::TextureDescriptor {
                label: Some("matmul operand (aliased)"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING,
                view_formats: &[],
            },
            wgpu::wgt::TextureUses::UNINITIALIZED,
        )
    };
    let view = texture.create_view(&Default::default());
    Some(Arc::new((texture, view)))
}
