# guestprep-script: install-virtio
# guestprep-output: json
# Installs virtio-win drivers (+ qemu-ga) from admin-provided media after SHA-256
# verification, then makes the storage drivers boot-start and reads the registry back.
# Media: a file already on the guest (uploaded by guestprep), a UNC path, or an HTTPS URL.
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$op = 'windows.virtio_drivers'
Initialize-GuestprepDir
$mediaDir = Join-Path -Path $GuestprepDir -ChildPath 'media'
if (-not (Test-Path -Path $mediaDir)) { $null = New-Item -Path $mediaDir -ItemType Directory }
$media = [string]$p.media
if ($media -match '^https://') {
    $target = Join-Path -Path $mediaDir -ChildPath ([System.IO.Path]::GetFileName(([System.Uri]$media).AbsolutePath))
    if (-not (Test-Path -Path $target)) {
        [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.SecurityProtocolType]::Tls12
        $client = New-Object -TypeName System.Net.WebClient
        $client.DownloadFile($media, $target + '.partial')
        Move-Item -Path ($target + '.partial') -Destination $target
    }
    $media = $target
}
$hash = Get-Sha256 -Path $media
if ($hash -ne ([string]$p.sha256).ToUpper()) { throw ('SHA-256 of ' + $media + ' is ' + $hash + ', expected ' + ([string]$p.sha256).ToUpper() + ': not installing') }

$steps = @()
$before = @(Get-ChildItem -Path (Join-Path -Path $env:SystemRoot -ChildPath 'System32\DriverStore\FileRepository') -Directory | Where-Object -FilterScript { $_.Name -match '^(vioscsi|viostor)\.inf_' })
if ($media -match '\.msi$') {
    $log = Join-Path -Path $GuestprepDir -ChildPath 'virtio-win-install.log'
    $proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/i', ('"' + $media + '"'), '/qn', '/norestart', 'ADDLOCAL=ALL', '/l*v', ('"' + $log + '"')) -Wait -PassThru
    # 3010 = success, reboot required
    if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 3010) { throw ('msiexec exited ' + $proc.ExitCode + ', see ' + $log) }
    $steps += [ordered]@{ action = 'msi_installed'; media = $media; exit_code = $proc.ExitCode }
} elseif ($media -match '\.iso$') {
    if (-not (Get-Command -Name 'Mount-DiskImage' -ErrorAction SilentlyContinue)) { throw 'Mount-DiskImage is not available: provide the guest-tools MSI instead of the ISO' }
    try {
        $img = Mount-DiskImage -ImagePath $media -PassThru
        $letter = ($img | Get-Volume).DriveLetter
        $osDir = [string]$p.os_dir
        foreach ($drv in @('vioscsi', 'viostor', 'NetKVM', 'vioserial', 'Balloon')) {
            $inf = Join-Path -Path ($letter + ':\') -ChildPath ($drv + '\' + $osDir + '\amd64')
            if (-not (Test-Path -Path $inf)) { continue }
            $out = & pnputil.exe '/add-driver' (Join-Path -Path $inf -ChildPath '*.inf') '/install'
            if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 3010) { throw ('pnputil failed for ' + $drv + ': ' + ($out -join ' ')) }
            $steps += [ordered]@{ action = 'driver_added'; inf = $drv }
        }
        $ga = Join-Path -Path ($letter + ':\') -ChildPath 'guest-agent\qemu-ga-x86_64.msi'
        if (Test-Path -Path $ga) {
            $proc = Start-Process -FilePath 'msiexec.exe' -ArgumentList @('/i', ('"' + $ga + '"'), '/qn', '/norestart') -Wait -PassThru
            if ($proc.ExitCode -ne 0 -and $proc.ExitCode -ne 3010) { throw ('qemu-ga msiexec exited ' + $proc.ExitCode) }
            $steps += [ordered]@{ action = 'qemu_ga_installed' }
        }
    } finally {
        $null = Dismount-DiskImage -ImagePath $media
    }
} else { throw ('unsupported media type: ' + $media + ' (expected .msi or .iso)') }
if ($before.Count -eq 0) {
    Add-JournalEntry -Operation $op -Kind 'driver_install' -Target $media -Detail @{ sha256 = $hash; reversible = $false }
}
foreach ($svc in @($p.boot_critical)) {
    $steps += Set-RegistryValueJournaled -Operation $op -Path ('HKLM:\SYSTEM\CurrentControlSet\Services\' + $svc) -Name 'Start' -Value 0
}
Write-Result -Value ([ordered]@{ ok = $true; steps = $steps })
