# guestprep-script: collect
# guestprep-output: json
# Reads (never changes) what guestprep needs to know before a move to KVM/Proxmox and
# prints ONE JSON document (schema guestprep.windows.facts/1). PowerShell 3.0+.
# Sections that cannot be read are null and their reason is recorded in "unknown".
# Cmdlets that are newer than PowerShell 3.0 / Windows Server 2012 run only inside
# Invoke-Guarded (checks the command exists, catches its errors) or a try block.
# UEFI guests also get the "efi" member (the ESP's loaders with SHA-256, the NVRAM boot
# entries) in the same document: one round trip. Sent with lib.ps1 prepended (ESP helpers).
Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$schema = 'guestprep.windows.facts/1'

if ($PSVersionTable.PSVersion.Major -lt 3) {
    # No ConvertTo-Json before 3.0: a fixed document, no input in it.
    $v = [string]$PSVersionTable.PSVersion
    Write-Output ('{"schema":"' + $schema + '","supported":false,"unsupported_reason":"PowerShell ' + $v + ' is older than 3.0 (Windows Server 2012 / WMF 3.0 required)","hostname":"' + $env:COMPUTERNAME + '","os":null}')
    exit 0
}

$unknown = @{}

function Invoke-Guarded {
    param([string]$Section, [string[]]$Requires, [scriptblock]$Body)
    foreach ($name in $Requires) {
        if (-not (Get-Command -Name $name -ErrorAction SilentlyContinue)) {
            $unknown[$Section] = "command $name is not available"
            return $null
        }
    }
    try {
        return (& $Body)
    } catch {
        $unknown[$Section] = [string]$_.Exception.Message
        return $null
    }
}

function Get-RegValue {
    param([string]$Path, [string]$Name)
    $item = Get-ItemProperty -Path $Path -Name $Name -ErrorAction SilentlyContinue
    if ($null -eq $item) { return $null }
    return $item.$Name
}

function ConvertTo-Prefix {
    param([string]$Mask)
    $bits = 0
    foreach ($octet in $Mask.Split('.')) {
        $n = [int]$octet
        # division, not -shr: PowerShell 2.0 cannot even parse -shr, and this file must reach
        # its version check there (about_Comparison_Operators: -shl/-shr are 3.0+)
        while ($n -gt 0) { $bits += ($n % 2); $n = [int][math]::Floor($n / 2) }
    }
    return $bits
}

function Get-EspFiles {
    # Files under <ESP>\EFI (at most 400) with sizes; .efi loaders also with SHA-256.
    param([string]$Root, [hashtable]$Unknown)
    $all = [System.IO.Directory]::GetFiles($Root + 'EFI', '*', [System.IO.SearchOption]::AllDirectories)
    $files = @()
    foreach ($f in @($all | Select-Object -First 400)) {
        $rel = '\' + $f.Substring($Root.Length)
        $hash = $null
        if ($rel.ToLowerInvariant().EndsWith('.efi')) {
            try { $hash = ([string](Get-Sha256 -Path $f)).ToLowerInvariant() } catch { $Unknown['sha256:' + $rel] = [string]$_.Exception.Message }
        }
        $size = [int64](New-Object -TypeName System.IO.FileInfo -ArgumentList $f).Length
        $files += [ordered]@{ path = $rel; size = $size; sha256 = $hash }
    }
    , $files
}

function Get-EfiFacts {
    # The "efi" member of a UEFI guest; what cannot be read is null with its reason in its "unknown".
    param($SecureBoot)
    $efiUnknown = @{}
    $efi = [ordered]@{ firmware = 'uefi'; secure_boot = $SecureBoot; esp = $null; files = $null; bcdedit = $null; unknown = $efiUnknown }
    try {
        $part = Get-EspPartition
        $espRoot = Get-EspRoot -Partition $part
        $free = $null
        # DriveInfo refuses volume paths; the storage module knows the ESP's free space
        try { $free = [int64](Get-Volume -Partition $part).SizeRemaining } catch { $efiUnknown['esp_free'] = [string]$_.Exception.Message }
        $efi.esp = [ordered]@{ disk = [int]$part.DiskNumber; partition = [int]$part.PartitionNumber; size = [int64]$part.Size; free = $free; access_path = $espRoot }
        $efi.files = Get-EspFiles -Root $espRoot -Unknown $efiUnknown
    } catch {
        $efiUnknown['esp'] = [string]$_.Exception.Message
    }
    try {
        # Invoke-Native (lib.ps1): `bcdedit 2>&1` under Stop turned its first stderr line into a
        # terminating error in Windows PowerShell 5.1
        $r = Invoke-Native -FilePath 'bcdedit.exe' -ArgumentList @('/enum', 'firmware')
        $efi.bcdedit = [ordered]@{ rc = [int]$r.ExitCode; out = ([string]$r.StdOut).Replace("`r`n", "`n").TrimEnd(); err = ([string]$r.StdErr).Trim() }
    } catch {
        $efi.bcdedit = [ordered]@{ rc = -1; out = ''; err = [string]$_.Exception.Message }
    }
    return $efi
}

# ---------------------------------------------------------------- OS
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$cv = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$build = [int]$os.BuildNumber
$osInfo = [ordered]@{
    caption = [string]$os.Caption
    version = [string]$os.Version
    build = $build
    ubr = Get-RegValue -Path $cv -Name 'UBR'
    edition = Get-RegValue -Path $cv -Name 'EditionID'
    product_type = [int]$os.ProductType
    installation_type = Get-RegValue -Path $cv -Name 'InstallationType'
    locale = [string](Get-Culture).Name
    architecture = [string]$os.OSArchitecture
    system_drive = [string]$os.SystemDrive
}
$verParts = ([string]$os.Version).Split('.')
$major = [int]$verParts[0]; $minor = [int]$verParts[1]
if ($major -lt 6 -or ($major -eq 6 -and $minor -lt 2)) {
    $doc = [ordered]@{
        schema = $schema; supported = $false
        unsupported_reason = ('Windows ' + $os.Version + ' is older than Windows Server 2012 / Windows 8 (6.2)')
        hostname = $env:COMPUTERNAME; os = $osInfo; ps_version = [string]$PSVersionTable.PSVersion
    }
    Write-Output (ConvertTo-Json -InputObject $doc -Depth 6 -Compress)
    exit 0
}

# ---------------------------------------------------------------- firmware, TPM
$fwType = $null
if ($env:firmware_type) { $fwType = ([string]$env:firmware_type).ToLower() }
if ($fwType -eq 'legacy') { $fwType = 'bios' }
$secureBoot = $null
if ($fwType -eq 'bios') { $secureBoot = $false }
elseif ($fwType -eq 'uefi') {
    $secureBoot = Invoke-Guarded -Section 'secure_boot' -Requires @('Confirm-SecureBootUEFI') -Body { [bool](Confirm-SecureBootUEFI) }
}
$efi = $null
if ($fwType -eq 'uefi') { $efi = Get-EfiFacts -SecureBoot $secureBoot }
$tpm = Invoke-Guarded -Section 'tpm' -Requires @() -Body {
    $t = @(Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftTpm' -ClassName Win32_Tpm -ErrorAction SilentlyContinue)
    if ($t.Count -eq 0) { [ordered]@{ present = $false; version = $null } }
    else { [ordered]@{ present = $true; version = ([string]$t[0].SpecVersion).Split(',')[0].Trim() } }
}

# ---------------------------------------------------------------- BitLocker
$bitlocker = Invoke-Guarded -Section 'bitlocker' -Requires @('Get-BitLockerVolume') -Body {
    $out = @()
    foreach ($v in @(Get-BitLockerVolume)) {
        $out += [ordered]@{
            mount = [string]$v.MountPoint
            protection_status = ([string]$v.ProtectionStatus).ToLower()
            volume_status = [string]$v.VolumeStatus
            encryption_percentage = $v.EncryptionPercentage
            protectors = @($v.KeyProtector | ForEach-Object -Process { [string]$_.KeyProtectorType })
            recovery_key_escrowed = $null
        }
    }
    , $out
}

# ---------------------------------------------------------------- storage
$sanCodes = @{ 1 = 'OnlineAll'; 2 = 'OfflineShared'; 3 = 'OfflineAll'; 4 = 'OfflineInternal' }
$sanValue = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\partmgr\Parameters' -Name 'SanPolicy'
if ($null -ne $sanValue) { $sanPolicy = $sanCodes[[int]$sanValue] }
elseif ($os.ProductType -eq 1) { $sanPolicy = 'OnlineAll' } else { $sanPolicy = 'OfflineShared' }
$disks = Invoke-Guarded -Section 'disks' -Requires @('Get-Disk', 'Get-Partition') -Body {
    $out = @()
    foreach ($d in @(Get-Disk)) {
        $parts = @()
        foreach ($p in @(Get-Partition -DiskNumber $d.Number -ErrorAction SilentlyContinue)) {
            $letter = $null
            if ($p.DriveLetter -and [string]$p.DriveLetter -ne [string][char]0) { $letter = [string]$p.DriveLetter }
            $parts += [ordered]@{ number = [int]$p.PartitionNumber; offset = [int64]$p.Offset; size = [int64]$p.Size; drive_letter = $letter; type = [string]$p.Type }
        }
        $out += [ordered]@{
            number = [int]$d.Number; size = [int64]$d.Size; friendly_name = [string]$d.FriendlyName
            bus_type = [string]$d.BusType; partition_style = [string]$d.PartitionStyle
            is_boot = [bool]$d.IsBoot; is_system = [bool]$d.IsSystem; is_offline = [bool]$d.IsOffline
            is_read_only = [bool]$d.IsReadOnly; logical_sector_size = [int]$d.LogicalSectorSize
            partitions = $parts
        }
    }
    , $out
}
$volumes = @()
foreach ($ld in @(Get-CimInstance -ClassName Win32_LogicalDisk -Filter 'DriveType = 3')) {
    $volumes += [ordered]@{ drive_letter = ([string]$ld.DeviceID).TrimEnd(':'); size = [int64]$ld.Size; free = [int64]$ld.FreeSpace; file_system = [string]$ld.FileSystem; label = [string]$ld.VolumeName }
}

# ---------------------------------------------------------------- drivers and services
$driverStore = Invoke-Guarded -Section 'driver_store' -Requires @() -Body {
    # The FileRepository folder names are <inf>_<arch>_<hash>: locale independent, no DISM needed.
    # The published name (oemNN.inf) is DriverDatabase\DriverPackages\<folder>'s default value;
    # the version is the INF's DriverVer line (the virtio-win release actually staged).
    $out = @()
    $repo = Join-Path -Path $env:SystemRoot -ChildPath 'System32\DriverStore\FileRepository'
    foreach ($dir in @(Get-ChildItem -Path $repo -Directory -ErrorAction SilentlyContinue)) {
        if ($dir.Name -match '^(vioscsi|viostor|netkvm|vioser|balloon|pvpanic|qemupciserial|viorng|vioinput|viofs)\.inf_([a-z0-9]+)_') {
            $infName = $Matches[1] + '.inf'
            $arch = $Matches[2]
            $published = Get-RegValue -Path ('HKLM:\SYSTEM\DriverDatabase\DriverPackages\' + $dir.Name) -Name '(default)'
            $ver = $null
            $infPath = Join-Path -Path $dir.FullName -ChildPath $infName
            if (Test-Path -LiteralPath $infPath) {
                foreach ($line in [System.IO.File]::ReadAllLines($infPath)) {
                    if ($line -match '^\s*DriverVer\s*=\s*[^,]*,\s*([0-9.]+)') { $ver = $Matches[1]; break }
                }
            }
            $out += [ordered]@{ inf = $published; original_name = $infName; provider = $null; version = $ver; class = $null; folder = $dir.Name; arch = $arch }
        }
    }
    , $out
}
$services = [ordered]@{}
foreach ($name in @('vioscsi', 'viostor', 'netkvm', 'vioser', 'balloon')) {
    $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $name
    if (Test-Path -Path $key) {
        $services[$name] = [ordered]@{ start = Get-RegValue -Path $key -Name 'Start'; image_path = Get-RegValue -Path $key -Name 'ImagePath'; group = Get-RegValue -Path $key -Name 'Group' }
    } else { $services[$name] = $null }
}

# Everything Windows needs to boot from a VirtIO disk, per storage driver (read back by
# set-boot-critical.ps1's verification): the service key, the .sys, the staged package and
# the PCI ID mappings (DriverDatabase from Windows 8 on, CriticalDeviceDatabase before).
$bootIds = @{
    vioscsi = @('PCI\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00', 'PCI\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01')
    viostor = @('PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00', 'PCI\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01')
}
$bootStorage = Invoke-Guarded -Section 'boot_storage' -Requires @() -Body {
    $out = [ordered]@{}
    foreach ($name in @('vioscsi', 'viostor')) {
        $key = 'HKLM:\SYSTEM\CurrentControlSet\Services\' + $name
        $svc = $null
        if (Test-Path -Path $key) {
            $svc = [ordered]@{ type = Get-RegValue -Path $key -Name 'Type'; start = Get-RegValue -Path $key -Name 'Start'; error_control = Get-RegValue -Path $key -Name 'ErrorControl'; group = Get-RegValue -Path $key -Name 'Group'; image_path = Get-RegValue -Path $key -Name 'ImagePath' }
        }
        $sys = Join-Path -Path $env:SystemRoot -ChildPath ('System32\drivers\' + $name + '.sys')
        $file = [ordered]@{ path = $sys; present = (Test-Path -LiteralPath $sys); sha256 = $null }
        if ($file.present) { $file.sha256 = ([string](Get-Sha256 -Path $sys)).ToLowerInvariant() }
        $ids = @()
        $cdd = @()
        foreach ($id in $bootIds[$name]) {
            $rest = $id.Substring(4)
            $idKey = 'HKLM:\SYSTEM\DriverDatabase\DeviceIds\PCI\' + $rest
            if (Test-Path -LiteralPath $idKey) {
                $item = Get-Item -LiteralPath $idKey
                $ids += [ordered]@{ id = $id; infs = @($item.GetValueNames() | Where-Object -FilterScript { $_ }) }
            }
            $cddKey = 'HKLM:\SYSTEM\CurrentControlSet\Control\CriticalDeviceDatabase\PCI#' + $rest
            if (Test-Path -LiteralPath $cddKey) {
                $cdd += [ordered]@{ id = $id; service = Get-RegValue -Path $cddKey -Name 'Service'; class_guid = Get-RegValue -Path $cddKey -Name 'ClassGUID' }
            }
        }
        $out[$name] = [ordered]@{ service = $svc; file = $file; device_ids = $ids; critical_device_database = $cdd }
    }
    $out
}
$qga = Get-CimInstance -ClassName Win32_Service -Filter "Name = 'QEMU-GA'"
$qemuGa = [ordered]@{ installed = ($null -ne $qga); state = $null; start_mode = $null }
if ($qga) { $qemuGa.state = [string]$qga.State; $qemuGa.start_mode = [string]$qga.StartMode }

$tools = $null
foreach ($root in @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall', 'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall')) {
    foreach ($k in @(Get-ChildItem -Path $root -ErrorAction SilentlyContinue)) {
        $p = Get-ItemProperty -Path $k.PSPath
        if (($p.PSObject.Properties.Name -contains 'DisplayName') -and $p.DisplayName -eq 'VMware Tools') {
            $tools = [ordered]@{ installed = $true; product_code = [string]$k.PSChildName; version = [string]$p.DisplayVersion; service_state = $null }
        }
    }
}
if ($null -eq $tools) { $tools = [ordered]@{ installed = $false; product_code = $null; version = $null; service_state = $null } }
else {
    $vmt = Get-CimInstance -ClassName Win32_Service -Filter "Name = 'VMTools'"
    if ($vmt) { $tools.service_state = [string]$vmt.State }
}

# ---------------------------------------------------------------- reboot, power
$reasons = @()
if (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') { $reasons += 'component-based-servicing' }
if (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') { $reasons += 'windows-update' }
if ($null -ne (Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations')) { $reasons += 'pending-file-rename' }
$active = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ActiveComputerName' -Name 'ComputerName'
$pendingName = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\ComputerName\ComputerName' -Name 'ComputerName'
if ($active -and $pendingName -and $active -ne $pendingName) { $reasons += 'computer-rename' }
$hiberboot = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Power' -Name 'HiberbootEnabled'
$hibernate = Get-RegValue -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Power' -Name 'HibernateEnabled'
$power = [ordered]@{ fast_startup = ($hiberboot -eq 1 -and $hibernate -ne 0); hibernation = ($hibernate -eq 1) }

# ---------------------------------------------------------------- network
$profiles = @{}
$null = Invoke-Guarded -Section 'network_profiles' -Requires @('Get-NetConnectionProfile') -Body {
    foreach ($cp in @(Get-NetConnectionProfile)) { $profiles[[int]$cp.InterfaceIndex] = @([string]$cp.NetworkCategory, [string]$cp.Name) }
}
$adapters = @()
foreach ($cfg in @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = True')) {
    if (-not $cfg.MACAddress) { continue }
    $nic = Get-CimInstance -ClassName Win32_NetworkAdapter -Filter ('Index = ' + [int]$cfg.Index)
    $v4 = @(); $v6 = @()
    $addrs = @($cfg.IPAddress); $masks = @($cfg.IPSubnet)
    for ($i = 0; $i -lt $addrs.Count; $i++) {
        if ($addrs[$i] -match ':') { $v6 += [ordered]@{ address = [string]$addrs[$i]; prefix = [int]$masks[$i] } }
        else { $v4 += [ordered]@{ address = [string]$addrs[$i]; prefix = (ConvertTo-Prefix -Mask ([string]$masks[$i])) } }
    }
    $prof = $profiles[[int]$cfg.InterfaceIndex]
    # DNS servers set by hand live in the interface's NameServer value (DHCP-given ones in
    # DhcpNameServer): a DHCP adapter with a non-empty NameServer needs its DNS captured too
    $nameServer = Get-RegValue -Path ('HKLM:\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters\Interfaces\' + [string]$cfg.SettingID) -Name 'NameServer'
    $adapters += [ordered]@{
        name = [string]$nic.NetConnectionID; description = [string]$cfg.Description; mac = [string]$cfg.MACAddress
        interface_index = [int]$cfg.InterfaceIndex; dhcp = [bool]$cfg.DHCPEnabled; ipv4 = $v4; ipv6 = $v6
        gateways = @($cfg.DefaultIPGateway | Where-Object -FilterScript { $_ }); dns = @($cfg.DNSServerSearchOrder | Where-Object -FilterScript { $_ })
        static_dns = (-not [string]::IsNullOrEmpty(([string]$nameServer).Trim())); dns_suffix = $cfg.DNSDomain; profile = $(if ($prof) { $prof[0] } else { $null }); network_name = $(if ($prof) { $prof[1] } else { $null })
    }
}
$routes = @()
foreach ($rt in @(Get-CimInstance -ClassName Win32_IP4PersistedRouteTable)) {
    $routes += [ordered]@{ destination = ([string]$rt.Destination + '/' + (ConvertTo-Prefix -Mask ([string]$rt.Mask))); next_hop = [string]$rt.NextHop; interface_index = $null; metric = [int]$rt.Metric1; persistent = $true }
}
$firewall = [ordered]@{}
$fwKey = 'HKLM:\SYSTEM\CurrentControlSet\Services\SharedAccess\Parameters\FirewallPolicy'
foreach ($pair in @(@('Domain', 'DomainProfile'), @('Private', 'StandardProfile'), @('Public', 'PublicProfile'))) {
    $firewall[$pair[0]] = ((Get-RegValue -Path ($fwKey + '\' + $pair[1]) -Name 'EnableFirewall') -eq 1)
}

# ---------------------------------------------------------------- policy, antivirus, domain
$rk = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions'
$policy = [ordered]@{
    deny_unspecified = ((Get-RegValue -Path $rk -Name 'DenyUnspecified') -eq 1)
    deny_removable = ((Get-RegValue -Path $rk -Name 'DenyRemovableDevices') -eq 1)
    deny_device_ids = @()
    deny_device_classes = @()
    allow_admin_install = ((Get-RegValue -Path $rk -Name 'AllowAdminInstall') -eq 1)
}
if ((Get-RegValue -Path $rk -Name 'DenyDeviceIDs') -eq 1 -and (Test-Path -Path ($rk + '\DenyDeviceIDs'))) {
    $item = Get-Item -Path ($rk + '\DenyDeviceIDs')
    $policy.deny_device_ids = @($item.GetValueNames() | ForEach-Object -Process { [string]$item.GetValue($_) })
}
if ((Get-RegValue -Path $rk -Name 'DenyDeviceClasses') -eq 1 -and (Test-Path -Path ($rk + '\DenyDeviceClasses'))) {
    $item = Get-Item -Path ($rk + '\DenyDeviceClasses')
    $policy.deny_device_classes = @($item.GetValueNames() | ForEach-Object -Process { [string]$item.GetValue($_) })
}
# Services are locale independent and exist on Server SKUs too (SecurityCenter2 does not).
$avServices = [ordered]@{ WinDefend = 'Microsoft Defender Antivirus'; SepMasterService = 'Symantec Endpoint Protection'; McShield = 'McAfee VirusScan'; ekrn = 'ESET'; CSFalconService = 'CrowdStrike Falcon'; SentinelAgent = 'SentinelOne'; 'Sophos MCS Agent' = 'Sophos'; ntrtscan = 'Trend Micro OfficeScan'; CylanceSvc = 'Cylance'; 'AVP' = 'Kaspersky' }
$antivirus = @()
foreach ($svc in $avServices.Keys) {
    $s = Get-CimInstance -ClassName Win32_Service -Filter ("Name = '" + $svc + "'")
    if ($s) { $antivirus += [ordered]@{ name = $avServices[$svc]; service = $svc; state = [string]$s.State; vendor_microsoft = ($svc -eq 'WinDefend') } }
}
$cs = Get-CimInstance -ClassName Win32_ComputerSystem
$domain = [ordered]@{ part_of_domain = [bool]$cs.PartOfDomain; domain = $(if ($cs.PartOfDomain) { [string]$cs.Domain } else { $null }); workgroup = $(if ($cs.PartOfDomain) { $null } else { [string]$cs.Workgroup }); role = [int]$cs.DomainRole; manufacturer = [string]$cs.Manufacturer; model = [string]$cs.Model }

# ---------------------------------------------------------------- script policy
# Group Policy execution policy (MachinePolicy/UserPolicy scopes) overrides the
# -ExecutionPolicy Bypass the first-boot tasks start powershell.exe with (about_Execution_Policies:
# "policies set by Group Policy ... take precedence"). Get-ExecutionPolicy's UserPolicy is the
# connecting account's, but the first-boot tasks run as SYSTEM (schtasks /RU SYSTEM, lib.ps1): the
# user policy that binds them is the one in SYSTEM's own hive, HKEY_USERS\S-1-5-18. "Turn on Script
# Execution" (PowerShellExecutionPolicy.admx) writes Software\Policies\Microsoft\Windows\PowerShell:
# EnableScripts 0 = disabled (no scripts: Restricted), 1 with ExecutionPolicy AllSigned|RemoteSigned|Unrestricted.
$executionPolicy = Invoke-Guarded -Section 'execution_policy' -Requires @('Get-ExecutionPolicy') -Body {
    $out = [ordered]@{}
    foreach ($scope in @('MachinePolicy', 'UserPolicy', 'LocalMachine')) { $out[$scope] = [string](Get-ExecutionPolicy -Scope $scope) }
    $systemKey = 'Registry::HKEY_USERS\S-1-5-18\Software\Policies\Microsoft\Windows\PowerShell'
    $enable = Get-RegValue -Path $systemKey -Name 'EnableScripts'
    $policy = Get-RegValue -Path $systemKey -Name 'ExecutionPolicy'
    if ($null -eq $enable) { $out['SystemUserPolicy'] = 'Undefined' }
    elseif ([int]$enable -eq 0) { $out['SystemUserPolicy'] = 'Restricted' }
    elseif ($policy) { $out['SystemUserPolicy'] = [string]$policy }
    else { $out['SystemUserPolicy'] = 'Undefined' }
    $out
}
# guestprep's scripts need FullLanguage (about_Language_Modes: ConstrainedLanguage refuses
# New-Object of most .NET types, which Invoke-Native and the journal use)
$languageMode = $null
try { $languageMode = [string]$ExecutionContext.SessionState.LanguageMode } catch { $unknown['language_mode'] = [string]$_.Exception.Message }

# ---------------------------------------------------------------- what guestprep left here
$state = $null
$stateFile = Join-Path -Path $env:ProgramData -ChildPath 'guestprep\state.json'
if (Test-Path -Path $stateFile) {
    $state = ConvertFrom-Json -InputObject ([System.IO.File]::ReadAllText($stateFile))
}

$doc = [ordered]@{
    schema = $schema; supported = $true; unsupported_reason = $null
    hostname = $env:COMPUTERNAME; ps_version = [string]$PSVersionTable.PSVersion; os = $osInfo
    firmware = [ordered]@{ type = $fwType; secure_boot = $secureBoot }; efi = $efi
    tpm = $tpm; bitlocker = $bitlocker
    storage = [ordered]@{ san_policy = $sanPolicy; disks = $disks }
    volumes = $volumes; driver_store = $driverStore; services = $services; boot_storage = $bootStorage
    qemu_ga = $qemuGa; vmware_tools = $tools
    pending_reboot = [ordered]@{ pending = ($reasons.Count -gt 0); reasons = $reasons }
    power = $power
    network = [ordered]@{ adapters = $adapters; routes = $routes }
    firewall = $firewall; device_install_policy = $policy; antivirus = $antivirus; domain = $domain
    execution_policy = $executionPolicy; language_mode = $languageMode
    guestprep = $state; unknown = $unknown
}
Write-Output (ConvertTo-Json -InputObject $doc -Depth 8 -Compress)
