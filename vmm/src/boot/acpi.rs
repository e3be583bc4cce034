//! ACPI tables: RSDP -> XSDT -> {FADT -> DSDT, MADT}, placed in the BIOS area.
//!
//! The machine is ACPI hardware-reduced: the FADT's sleep control and reset registers
//! point at tern's power-control ports (devices::legacy::acpi_pm), so a guest
//! `poweroff` writes S5 there and tern exits. The MADT lists every vCPU's local APIC,
//! the IOAPIC, the ISA IRQ0 -> GSI2 override, and LINT1 as NMI.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Arg, Device, EISAName, Equal, If, Interrupt, Method, Name, Notify, Package, Path,
    ResourceTemplate, Return, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace as GasSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use devices::legacy::acpi_pm::{
    ACPI_PM_PORT, RESET_OFFSET, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_OFFSET, SLEEP_STATUS_OFFSET,
};
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{ACPI_TABLES_START, IOAPIC_ADDR, LAPIC_ADDR, MMIO_HOLE_START, PCI_MMIO_END, VMGENID_ADDR};
use crate::vmgenid::VMGENID_GSI;
use devices::legacy::cmos::{CMOS_PORT, CMOS_PORT_COUNT};
use devices::legacy::serial::{COM1_IRQ, COM1_PORT, UART_PORT_COUNT};
use devices::power::POWER_BUTTON_GSI;
use devices::pci::config_io::{CONFIG_ADDRESS_PORT, CONFIG_IO_PORT_COUNT};
use crate::memory::GuestMemoryMmap;

const OEM_ID: [u8; 6] = *b"TERN  ";
const OEM_TABLE_ID: [u8; 8] = *b"TERNVM  ";
const OEM_REVISION: u32 = 1;

/// Errors building ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables need {needed} bytes but the BIOS area has {available}")]
    TooLarge { needed: u64, available: u64 },
    #[error("writing ACPI tables: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// The PCI host bridge `\_SB.PCI0`: bus 0, config ports 0xCF8-0xCFF, the I/O space
/// around them and the 32-bit MMIO window BARs live in.
fn pci_host_bridge() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0A03"));
    let adr = Name::new(Path::new("_ADR"), &0u32);
    let seg = Name::new(Path::new("_SEG"), &0u8);
    let uid = Name::new(Path::new("_UID"), &0u8);
    let bbn = Name::new(Path::new("_BBN"), &0u8);
    let bus = AddressSpace::new_bus_number(0u16, 0u16);
    let config_ports = IO::new(CONFIG_ADDRESS_PORT, CONFIG_ADDRESS_PORT, 1, CONFIG_IO_PORT_COUNT as u8);
    let io_low = AddressSpace::new_io(0u16, CONFIG_ADDRESS_PORT - 1, None);
    let io_high = AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let mmio = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        MMIO_HOLE_START as u32,
        (PCI_MMIO_END - 1) as u32,
        None,
    );
    let resources = ResourceTemplate::new(vec![&bus, &config_ports, &io_low, &io_high, &mmio]);
    let crs = Name::new(Path::new("_CRS"), &resources);
    to_bytes(&Device::new(Path::new("PCI0"), vec![&hid, &adr, &seg, &uid, &bbn, &crs]))
}

/// COM1 `\_SB.COM1`: described so a hardware-reduced ACPI guest (which has no legacy
/// PIC and maps no ISA IRQs by itself) routes the UART's IRQ 4 through the IOAPIC.
fn com1() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0501"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    let ports = IO::new(COM1_PORT, COM1_PORT, 1, UART_PORT_COUNT as u8);
    let irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&ports, &irq]));
    to_bytes(&Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]))
}

/// The CMOS RTC `\_SB.RTC_`: a hardware-reduced ACPI guest probes the rtc-cmos
/// driver only for a described PNP0B00 device (otherwise the probe fails and the
/// guest has no /dev/rtc0). No interrupt: tern's RTC raises none, so the guest
/// reads it by polling (alarms unsupported).
fn rtc() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0B00"));
    let ports = IO::new(CMOS_PORT, CMOS_PORT, 1, CMOS_PORT_COUNT as u8);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&ports]));
    to_bytes(&Device::new(Path::new("RTC_"), vec![&hid, &crs]))
}

/// The Generic Event Device of a hardware-reduced machine (no fixed PM1 event block)
/// and what it signals: `\_SB.GED0` (ACPI0013) with one edge interrupt per event;
/// the guest calls `_EVT` with the interrupt's GSI, which notifies the device
/// concerned with 0x80. [`POWER_BUTTON_GSI`]: the power button `\_SB.PWRB` (PNP0C0C),
/// "button pressed". [`VMGENID_GSI`]: the VM generation ID `\_SB.VGEN`, "the ID
/// changed" (see [`vm_generation_id`]).
fn generic_event_device() -> Vec<u8> {
    let pwrb_hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0C0C"));
    let pwrb_uid = Name::new(Path::new("_UID"), &0u8);
    let pwrb = Device::new(Path::new("PWRB"), vec![&pwrb_hid, &pwrb_uid]);
    let ged_hid = Name::new(Path::new("_HID"), &"ACPI0013");
    let ged_uid = Name::new(Path::new("_UID"), &0u8);
    let button_irq = Interrupt::new(true, true, false, false, POWER_BUTTON_GSI);
    let vmgenid_irq = Interrupt::new(true, true, false, false, VMGENID_GSI);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&button_irq, &vmgenid_irq]));
    let (pwrb_path, vgen_path) = (Path::new("\\_SB_.PWRB"), Path::new("\\_SB_.VGEN"));
    let pressed = Notify::new(&pwrb_path, &0x80u8);
    let changed = Notify::new(&vgen_path, &0x80u8);
    let is_button = Equal::new(&Arg(0), &POWER_BUTTON_GSI);
    let is_vmgenid = Equal::new(&Arg(0), &VMGENID_GSI);
    let on_button = If::new(&is_button, vec![&pressed]);
    let on_vmgenid = If::new(&is_vmgenid, vec![&changed]);
    let evt = Method::new(Path::new("_EVT"), 1, true, vec![&on_button, &on_vmgenid]);
    let ged = Device::new(Path::new("GED0"), vec![&ged_hid, &ged_uid, &crs, &evt]);
    let mut bytes = to_bytes(&pwrb);
    bytes.extend(to_bytes(&ged));
    bytes
}

/// The VM generation ID device `\_SB.VGEN` as Linux's vmgenid driver binds it
/// (`_HID` "VMGENCTR", `_CID` and `_DDN` "VM_Gen_Counter"): `ADDR` returns the
/// guest-physical address of the 16-byte ID as a package of its low and high 32 bits.
fn vm_generation_id() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &"VMGENCTR");
    let cid = Name::new(Path::new("_CID"), &"VM_Gen_Counter");
    let ddn = Name::new(Path::new("_DDN"), &"VM_Gen_Counter");
    let (low, high) = (VMGENID_ADDR as u32, (VMGENID_ADDR >> 32) as u32);
    let address = Package::new(vec![&low, &high]);
    let returned = Return::new(&address);
    let addr = Method::new(Path::new("ADDR"), 0, false, vec![&returned]);
    to_bytes(&Device::new(Path::new("VGEN"), vec![&hid, &cid, &ddn, &addr]))
}
/// The `\_SB` scope with every device tern describes.
fn system_bus() -> Vec<u8> {
    struct Raw(Vec<u8>);
    impl Aml for Raw {
        fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
            sink.vec(&self.0);
        }
    }
    let (pci, serial, rtc) = (Raw(pci_host_bridge()), Raw(com1()), Raw(rtc()));
    let (ged, vmgenid) = (Raw(generic_event_device()), Raw(vm_generation_id()));
    to_bytes(&Scope::new(Path::new("\\_SB_"), vec![&pci, &serial, &rtc, &ged, &vmgenid]))
}

/// The DSDT: the `_S5_` sleep object, the PCI host bridge, COM1, the RTC, the Generic
/// Event Device with the power button, and the VM generation ID.
pub fn dsdt() -> Vec<u8> {
    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = Name::new(Path::new("_S5_"), &Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]));
    table.append_slice(&to_bytes(&s5));
    table.append_slice(&system_bus());
    table.as_slice().to_vec()
}

/// The MADT for `cpus` vCPUs whose APIC IDs are 0..cpus.
pub fn madt(cpus: u8) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    const TYPE_LOCAL_APIC: u8 = 0;
    const TYPE_IOAPIC: u8 = 1;
    const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
    const TYPE_LOCAL_APIC_NMI: u8 = 4;
    const LAPIC_ENABLED: u32 = 1;

    let mut table = Sdt::new(*b"APIC", 36, 4, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for cpu in 0..cpus {
        body.extend_from_slice(&[TYPE_LOCAL_APIC, 8, cpu, cpu]);
        body.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
    }
    // IOAPIC id = number of CPUs (distinct from every LAPIC id), GSI base 0.
    body.extend_from_slice(&[TYPE_IOAPIC, 12, cpus, 0]);
    body.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // ISA bus IRQ 0 (PIT) is wired to GSI 2 on the IOAPIC.
    body.extend_from_slice(&[TYPE_INTERRUPT_OVERRIDE, 10, 0, 0]);
    body.extend_from_slice(&2u32.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    // LINT1 of every processor (uid 0xff) is the NMI line.
    body.extend_from_slice(&[TYPE_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

fn io_register(port: u64) -> GAS {
    GAS::new(GasSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

/// The FADT: hardware-reduced, pointing at the DSDT and the power-control ports.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let pm = u64::from(ACPI_PM_PORT);
    let mut builder = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    builder.sleep_control_reg = io_register(pm + SLEEP_CONTROL_OFFSET);
    builder.sleep_status_reg = io_register(pm + SLEEP_STATUS_OFFSET);
    builder.reset_reg = io_register(pm + RESET_OFFSET);
    builder.reset_value = RESET_VALUE;
    to_bytes(&builder.finalize())
}

fn align16(x: u64) -> u64 {
    (x + 15) & !15
}

/// Writes all tables at [`ACPI_TABLES_START`] (below the VM generation ID's page);
/// returns the RSDP address.
pub fn write_tables(mem: &GuestMemoryMmap, cpus: u8) -> Result<GuestAddress, AcpiError> {
    let rsdp_addr = ACPI_TABLES_START;
    let mut next = align16(rsdp_addr + Rsdp::len() as u64);

    let mut place = |bytes: &[u8]| -> Result<u64, AcpiError> {
        let addr = next;
        let end = addr + bytes.len() as u64;
        if end > VMGENID_ADDR {
            return Err(AcpiError::TooLarge { needed: end - ACPI_TABLES_START, available: VMGENID_ADDR - ACPI_TABLES_START });
        }
        mem.write_slice(bytes, GuestAddress(addr))?;
        next = align16(end);
        Ok(addr)
    };

    let dsdt_addr = place(&dsdt())?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(&madt(cpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&to_bytes(&xsdt))?;
    mem.write_slice(&to_bytes(&Rsdp::new(OEM_ID, xsdt_addr)), GuestAddress(rsdp_addr))?;
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn length_field(table: &[u8]) -> usize {
        u32::from_le_bytes(table[4..8].try_into().unwrap()) as usize
    }

    #[test]
    fn tables_have_valid_lengths_and_checksums() {
        for t in [dsdt(), madt(4), fadt(0xe0100)] {
            assert_eq!(length_field(&t), t.len());
            assert!(checksum_ok(&t), "checksum of {:?}", &t[..4]);
        }
    }

    #[test]
    fn madt_lists_every_cpu() {
        let t = madt(3);
        let mut off = 44;
        let mut ids = vec![];
        while off < t.len() {
            let (kind, len) = (t[off], t[off + 1] as usize);
            if kind == 0 {
                ids.push(t[off + 3]);
            }
            off += len;
        }
        assert_eq!(off, t.len());
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[test]
    fn dsdt_contains_s5() {
        let t = dsdt();
        assert!(t.windows(4).any(|w| w == b"_S5_"));
        assert!(t.windows(4).any(|w| w == b"PCI0"));
        assert!(t.windows(4).any(|w| w == b"COM1"));
        assert!(t.windows(4).any(|w| w == b"RTC_"));
    }

    #[test]
    fn dsdt_describes_the_power_button_behind_a_generic_event_device() {
        let t = dsdt();
        for name in [&b"GED0"[..], b"PWRB", b"_EVT", b"ACPI0013"] {
            assert!(t.windows(name.len()).any(|w| w == name), "{}", String::from_utf8_lossy(name));
        }
        // PNP0C0C as a compressed EISA id, and the interrupt descriptor on its GSI.
        assert!(t.windows(4).any(|w| w == [0x41, 0xd0, 0x0c, 0x0c]));
        // Extended interrupt descriptor: consumer, edge, active high, one interrupt: GSI 9.
        let mut descriptor = vec![0x89, 0x06, 0x00, 0x03, 0x01];
        descriptor.extend(POWER_BUTTON_GSI.to_le_bytes());
        assert!(t.windows(descriptor.len()).any(|w| w == descriptor), "no interrupt descriptor for GSI {POWER_BUTTON_GSI}");
        // Notify(\_SB_.PWRB, 0x80): NotifyOp 0x86, then the path.
        assert!(t.windows(2).any(|w| w == [0x86, b'\\']));
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// An AML integer at `at`: (value, bytes it takes).
    fn aml_integer(aml: &[u8], at: usize) -> (u64, usize) {
        let le = |n: usize| aml[at + 1..at + 1 + n].iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
        match aml[at] {
            0x00 => (0, 1),
            0x01 => (1, 1),
            0x0a => (le(1), 2),
            0x0b => (le(2), 3),
            0x0c => (le(4), 5),
            0x0e => (le(8), 9),
            op => panic!("not an integer: opcode {op:#x}"),
        }
    }

    #[test]
    fn dsdt_describes_the_vm_generation_id_as_linux_binds_it() {
        let t = dsdt();
        // DeviceOp (ExtOpPrefix 0x5b, 0x82), its package length (1 or 2 bytes), its name.
        let vgen = (4..t.len() - 4)
            .find(|&i| &t[i..i + 4] == b"VGEN" && (t[i - 3..i - 1] == [0x5b, 0x82] || t[i - 4..i - 2] == [0x5b, 0x82]))
            .expect("a VGEN device");
        // _HID "VMGENCTR", _CID and _DDN "VM_Gen_Counter" as strings (StringPrefix 0x0d).
        assert!(find(&t, b"_HID\x0dVMGENCTR\0").is_some());
        assert!(find(&t, b"_CID\x0dVM_Gen_Counter\0").is_some());
        assert!(find(&t, b"_DDN\x0dVM_Gen_Counter\0").is_some());
        // Method ADDR, no arguments: Return (Package (2) { low, high }).
        let addr = find(&t, b"ADDR").expect("an ADDR method");
        assert!(addr > vgen);
        assert_eq!(t[addr + 4], 0, "no arguments, not serialized");
        assert_eq!(t[addr + 5], 0xa4, "ReturnOp");
        assert_eq!(t[addr + 6], 0x12, "PackageOp");
        assert_eq!(t[addr + 8], 2, "two elements");
        let (low, used) = aml_integer(&t, addr + 9);
        let (high, _) = aml_integer(&t, addr + 9 + used);
        assert!(low <= u64::from(u32::MAX) && high <= u64::from(u32::MAX));
        assert_eq!(low | high << 32, VMGENID_ADDR, "ADDR returns where the ID is written");
    }

    #[test]
    fn the_generic_event_device_notifies_the_vm_generation_id_on_its_own_interrupt() {
        let t = dsdt();
        let mut descriptor = vec![0x89, 0x06, 0x00, 0x03, 0x01];
        descriptor.extend(VMGENID_GSI.to_le_bytes());
        let ged = find(&t, b"GED0").unwrap();
        let crs = find(&t[ged..], &descriptor).map(|at| at + ged);
        assert!(crs.is_some(), "the GED's _CRS has GSI {VMGENID_GSI}");
        // If (LEqual (Arg0, VMGENID_GSI)) { Notify (\_SB_.VGEN, 0x80) }
        let evt = find(&t, b"_EVT").unwrap();
        let test = [0x93, 0x68, 0x0a, VMGENID_GSI as u8];
        let at = find(&t[evt..], &test).expect("_EVT tests Arg0 for the VM generation ID's GSI") + evt;
        let notify = [&[0x86, b'\\', 0x2e][..], b"_SB_VGEN", &[0x0a, 0x80]].concat();
        let n = find(&t[at..], &notify).expect("and notifies VGEN with 0x80") + at;
        assert!(n - at < 8, "the notify is the If's body");
        assert_ne!(VMGENID_GSI, POWER_BUTTON_GSI);
    }

    #[test]
    fn the_tables_end_below_the_vm_generation_id() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        write_tables(&mem, 4).unwrap();
        let mut page = [0u8; 4096];
        mem.read_slice(&mut page, GuestAddress(VMGENID_ADDR)).unwrap();
        assert!(page.iter().all(|b| *b == 0), "no table reaches the ID's page");
        let e820 = crate::memory::e820_map(64 << 20);
        assert!(e820.iter().any(|e| e.kind == crate::memory::E820Kind::Reserved
            && e.addr <= VMGENID_ADDR
            && VMGENID_ADDR + 16 <= e.addr + e.size));
    }

    #[test]
    fn rsdp_written_and_points_at_xsdt() {
        let mem = crate::memory::create_guest_memory(64 << 20).unwrap();
        let rsdp = write_tables(&mem, 2).unwrap();
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, rsdp).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let xsdt: u64 = mem.read_obj(GuestAddress(rsdp.0 + 24)).unwrap();
        let mut xsig = [0u8; 4];
        mem.read_slice(&mut xsig, GuestAddress(xsdt)).unwrap();
        assert_eq!(&xsig, b"XSDT");
    }
}
