//! Linux's 64-bit boot protocol: the bzImage, the initramfs, the command
//! line and the zero page (`struct boot_params` with the e820 map), plus
//! the identity-mapped page tables and GDT the BSP starts on.

use std::fs::File;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, load_cmdline, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::layout;

/// e820 type of usable RAM.
const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
const E820_RESERVED: u32 = 2;
/// `setup_header.boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// `setup_header.header`: "HdrS".
const HDRS: u32 = 0x5372_6448;
/// `setup_header.type_of_loader`: undefined loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// The 64-bit entry point is this far into the protected-mode kernel.
const ENTRY_64_OFFSET: u64 = 0x200;
/// Oldest boot protocol with a 64-bit entry point and `initrd_addr_max`.
const MIN_PROTOCOL: u16 = 0x0206;

/// Where the BSP starts.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// RIP of the 64-bit entry point.
    pub rip: u64,
}

/// Loads the kernel, initramfs and command line and writes the zero page,
/// the page tables and the GDT.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
    initrd: Option<&mut File>,
    cmdline: &str,
) -> Result<Entry, String> {
    let ram_end = mem.last_addr().0 + 1;
    let loaded = BzImage::load(mem, None, kernel, Some(GuestAddress(layout::HIMEM_START)))
        .map_err(|e| format!("loading the bzImage: {e}"))?;
    let mut hdr = loaded
        .setup_header
        .ok_or("the bzImage has no setup header")?;
    let version = hdr.version;
    if version < MIN_PROTOCOL {
        return Err(format!(
            "boot protocol {version:#x} is older than {MIN_PROTOCOL:#x} (no 64-bit entry)"
        ));
    }

    let mut line = Cmdline::new(layout::CMDLINE_MAX).map_err(|e| e.to_string())?;
    line.insert_str(cmdline)
        .map_err(|e| format!("command line: {e}"))?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &line)
        .map_err(|e| format!("writing the command line: {e}"))?;
    let cmdline_len = line
        .as_cstring()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .len();

    hdr.type_of_loader = LOADER_UNDEFINED;
    hdr.boot_flag = BOOT_FLAG;
    hdr.header = HDRS;
    hdr.cmd_line_ptr = layout::CMDLINE as u32;
    hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        let (addr, size) = load_initrd(
            mem,
            initrd,
            u64::from(hdr.initrd_addr_max),
            loaded.kernel_end,
        )?;
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }

    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    let e820 = [
        (0, layout::EBDA_START, E820_RAM),
        (
            layout::EBDA_START,
            0xa0000 - layout::EBDA_START,
            E820_RESERVED,
        ),
        (layout::HIMEM_START, ram_end - layout::HIMEM_START, E820_RAM),
    ];
    for (i, (addr, size, kind)) in e820.into_iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE))
        .map_err(|e| format!("writing the zero page: {e}"))?;

    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(Entry {
        rip: loaded.kernel_load.0 + ENTRY_64_OFFSET,
    })
}

/// Puts the initramfs at the highest page-aligned address where it fits
/// below both the end of RAM and the kernel's `initrd_addr_max`, above
/// the kernel. Returns its address and size.
fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    initrd_addr_max: u64,
    kernel_end: u64,
) -> Result<(u64, u64), String> {
    let size = initrd
        .metadata()
        .map_err(|e| format!("initramfs: {e}"))?
        .len();
    let ram_end = mem.last_addr().0 + 1;
    let top = ram_end.min(initrd_addr_max.saturating_add(1));
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| format!("the initramfs ({size} bytes) does not fit above the kernel"))?;
    mem.read_exact_volatile_from(GuestAddress(addr), initrd, size as usize)
        .map_err(|e| format!("loading the initramfs: {e}"))?;
    Ok((addr, size))
}

/// Identity map of the first 1 GiB with 2 MiB pages: enough for the
/// kernel's startup code, which builds its own page tables.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), String> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    let w = |value: u64, at: u64| {
        mem.write_obj(value, GuestAddress(at))
            .map_err(|e| format!("writing the page tables: {e}"))
    };
    w(layout::PDPT | PRESENT_RW, layout::PML4)?;
    w(layout::PD | PRESENT_RW, layout::PDPT)?;
    for i in 0..512u64 {
        w((i << 21) | PRESENT_RW | PAGE_SIZE_2M, layout::PD + i * 8)?;
    }
    Ok(())
}

/// GDT selectors the BSP's segments use.
pub mod selector {
    /// 64-bit code segment.
    pub const CODE: u16 = 0x08;
    /// Data segment.
    pub const DATA: u16 = 0x10;
    /// Task state segment.
    pub const TSS: u16 = 0x18;
}

/// The GDT entries, in selector order (null, code, data, TSS): flat
/// segments as the boot protocol requires (`__BOOT_CS`, `__BOOT_DS`).
pub const GDT_ENTRIES: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff, // code: present, DPL 0, execute/read, accessed, L, G
    0x00cf_9300_0000_ffff, // data: present, DPL 0, read/write, accessed, D/B, G
    0x008f_8b00_0000_ffff, // TSS: present, busy 64-bit TSS, G
];

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), String> {
    for (i, entry) in GDT_ENTRIES.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT + 8 * i as u64))
            .map_err(|e| format!("writing the GDT: {e}"))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::IDT))
        .map_err(|e| format!("writing the IDT: {e}"))
}
